import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsBoolean, IsNotEmpty, IsOptional, IsString, MaxLength } from 'class-validator';

export class CreateEnvironmentDto {
  @ApiProperty({ type: String, maxLength: 100 })
  @IsString()
  @IsNotEmpty()
  @MaxLength(100)
  name: string;
  @ApiPropertyOptional({ type: Boolean, description: "the default of its deployments' guided failure" })
  @IsOptional()
  @IsBoolean()
  guidedFailure?: boolean;
  @ApiPropertyOptional({
    type: Boolean,
    description: 'the default of its deployments: roll back automatically when they fail',
  })
  @IsOptional()
  @IsBoolean()
  rollbackOnFailure?: boolean;
}

/** What PATCH changes; a field left out keeps its value. */
export class UpdateEnvironmentDto {
  @ApiPropertyOptional({ type: String, maxLength: 100 })
  @IsOptional()
  @IsString()
  @IsNotEmpty()
  @MaxLength(100)
  name?: string;
  @ApiPropertyOptional({ type: Boolean, description: "the default of its deployments' guided failure" })
  @IsOptional()
  @IsBoolean()
  guidedFailure?: boolean;
  @ApiPropertyOptional({
    type: Boolean,
    description: 'the default of its deployments: roll back automatically when they fail',
  })
  @IsOptional()
  @IsBoolean()
  rollbackOnFailure?: boolean;
}
