import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsOptional, IsString, MaxLength } from 'class-validator';

export class SubmitInterruptionDto {
  @ApiProperty({ type: String })
  @IsString()
  @MaxLength(50)
  result: string;
  @ApiPropertyOptional({ type: String })
  @IsOptional()
  @IsString()
  @MaxLength(4000)
  notes?: string;
}
