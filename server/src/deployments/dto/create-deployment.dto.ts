import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { ArrayMaxSize, IsArray, IsBoolean, IsNotEmpty, IsOptional, IsString, MaxLength } from 'class-validator';

export class CreateDeploymentDto {
  @ApiProperty({ type: String })
  @IsString()
  @IsNotEmpty()
  @MaxLength(200)
  releaseId: string;
  @ApiProperty({ type: String })
  @IsString()
  @IsNotEmpty()
  @MaxLength(200)
  environmentId: string;
  @ApiPropertyOptional({ type: [String] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(10_000)
  @IsString({ each: true })
  specificMachineIds?: string[];
  @ApiPropertyOptional({ type: [String] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(10_000)
  @IsString({ each: true })
  excludedMachineIds?: string[];
  @ApiPropertyOptional({ type: Boolean })
  @IsOptional()
  @IsBoolean()
  guidedFailure?: boolean;
  @ApiPropertyOptional({
    type: Boolean,
    description: "when it fails, roll back to the environment's last successful release (default: the environment's)",
  })
  @IsOptional()
  @IsBoolean()
  rollbackOnFailure?: boolean;
  /** Checked by the service (scheduleOf), which names the field: not in the past, before the expiry. */
  @ApiPropertyOptional({
    type: String,
    description: 'ISO-8601 time: the deployment stays scheduled until then, then queues as usual',
  })
  @IsOptional()
  @IsString()
  @MaxLength(100)
  queueAt?: string;
  @ApiPropertyOptional({ type: String, description: 'ISO-8601 time: not started by then, it ends cancelled' })
  @IsOptional()
  @IsString()
  @MaxLength(100)
  queueExpiresAt?: string;
}
